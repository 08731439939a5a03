from infer.search.cli import main

main()
