from alignment.classify.stage import main

raise SystemExit(main())
