"""A local server of the OpenAI Files and Uploads API: the server of every test and benchmark,
and of ``openai-fs mount --demo``.

- ``server``          the ``openai-fs serve`` command (uvicorn)
- ``app``             the ASGI app: authentication, request log entry and fault selection for
                      every ``/v1`` request; composes the two route sets below
- ``api_routes``      the ``/v1`` Files and Uploads handlers
- ``control_routes``  the ``/_emulator`` control API, the application of faults, the request log
- ``config``          the runtime configuration (``PATCH /_emulator/config``)
- ``responses``       JSON and error responses, the streamed file body (shared by both route sets)
- ``backend``         the store and the worker pool of its blocking calls
- ``extras``          hostile entries that tests add to listings
- ``store``           SQLite metadata and blob files in the data directory
- ``forms``           streaming multipart bodies
- ``faults``          fault rules
- ``errors``          OpenAI-shaped errors
- ``samples``         demo files
- ``control``         ``EmulatorProcess`` / ``EmulatorControl``: start a server in a child process
                      and drive it
"""
