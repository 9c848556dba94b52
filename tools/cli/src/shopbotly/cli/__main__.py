from shopbotly.cli.app import main

main()
