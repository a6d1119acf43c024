from pbmlx.cli import main

raise SystemExit(main())
