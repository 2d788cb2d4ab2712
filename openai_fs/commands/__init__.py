"""The openai-fs commands: mount, unmount, status (and their options, logs and key handling)."""
