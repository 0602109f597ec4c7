from sidestream.main import main

main()
