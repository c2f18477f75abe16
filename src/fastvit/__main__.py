from fastvit.cli import main

raise SystemExit(main())
