from tokengate.cli.main import main

main()
