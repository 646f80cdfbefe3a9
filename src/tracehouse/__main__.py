from tracehouse.cli import main

main()
