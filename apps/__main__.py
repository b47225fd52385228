from attnrec.cli import main

raise SystemExit(main())
