from bloodgen.cli import main

raise SystemExit(main())
