from tlbench.cli import main

raise SystemExit(main())
