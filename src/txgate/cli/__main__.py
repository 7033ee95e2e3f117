from txgate.cli.main import main

main()
