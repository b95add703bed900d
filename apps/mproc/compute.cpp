// Options shared by the compute subcommands.
