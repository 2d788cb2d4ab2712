from openai_fs.commands.cli import main

raise SystemExit(main())
