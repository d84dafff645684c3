import VigilApp
import VigilSystem

// Parse, run, map errors to an exit code: everything else lives in VigilApp.
ThisProcess.exit(CLI.main(Array(CommandLine.arguments.dropFirst())))
