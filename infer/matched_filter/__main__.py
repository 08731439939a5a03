from infer.matched_filter.cli import main

main()
