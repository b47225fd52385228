from attnrec.apps.cli import main

raise SystemExit(main())
