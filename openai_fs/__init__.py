"""openai-fs: the OpenAI Files API as a filesystem, and a local emulator of that API."""

__version__ = "0.1.0"
