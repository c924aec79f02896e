from specivod.cli import main

raise SystemExit(main())
