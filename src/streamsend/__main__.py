from streamsend.cli import main

raise SystemExit(main())
