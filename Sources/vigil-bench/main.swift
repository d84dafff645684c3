import VigilApp
import VigilSystem

// `vigil-bench`: the benchmarks and the test drivers, outside the product (`vigil` links none
// of this). Same option parsing, state-directory checks and exit codes as `vigil`.
ThisProcess.exit(BenchCLI.main(Array(CommandLine.arguments.dropFirst())))
