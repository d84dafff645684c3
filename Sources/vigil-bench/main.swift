import Glibc
import VigilApp

// `vigil-bench`: the benchmarks and the test drivers, outside the product (`vigil` links none
// of this). Same option parsing, state-directory checks and exit codes as `vigil`.
exit(BenchCLI.main(Array(CommandLine.arguments.dropFirst())))
