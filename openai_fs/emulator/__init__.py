"""A local server of the OpenAI Files and Uploads API: the server of every test and benchmark,
and of ``openai-fs mount --demo``.

- ``server``  the ``openai-fs serve`` command (uvicorn)
- ``app``     the ASGI app: ``/v1`` endpoints, fault injection, request log, ``/_emulator`` control API
- ``store``   SQLite metadata and blob files in the data directory
- ``forms``   streaming multipart bodies
- ``faults``  fault rules
- ``errors``  OpenAI-shaped errors
- ``samples`` demo files
- ``control`` ``EmulatorProcess`` / ``EmulatorControl``: start a server in a child process and drive it
"""
