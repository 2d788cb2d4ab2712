from openai_fs.cli import main

raise SystemExit(main())
