import Glibc
import VigilApp

// Parse, run, map errors to an exit code: everything else lives in VigilApp.
exit(CLI.main(Array(CommandLine.arguments.dropFirst())))
