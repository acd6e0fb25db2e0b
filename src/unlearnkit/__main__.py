from unlearnkit.cli import main

main()
