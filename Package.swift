// swift-tools-version: 6.0
// Vigil: keeps a chat-driven agent system alive and losing nothing.
// No package dependencies on purpose: a watchdog must not break because of someone else's package.
import PackageDescription

// Release builds put every function in its own section, so the link can lay out together the
// ones an idle pair runs (contrib/link-order.txt: docs/architecture.md, "Memory"); without it
// a file's functions stay one block, wherever its hottest one goes.
let functionSections: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release))]

let package = Package(
    name: "Vigil",
    products: [
        .executable(name: "vigil", targets: ["vigil"]),
        .executable(name: "vigil-bench", targets: ["vigil-bench"]),
    ],
    targets: [
        // Linux calls the Glibc module does not export (pidfd, setsid-on-spawn, a signal self-pipe).
        .target(name: "CVigil", cSettings: [.unsafeFlags(["-ffunction-sections"], .when(configuration: .release))]),
        // The system's libsqlite3.
        .systemLibrary(name: "CSQLite"),
        // Pure logic: time values, durations, verdicts, the escalation state machine. No system calls.
        .target(name: "VigilCore", swiftSettings: functionSections),
        // The system layer: errno funnel, clocks, processes, pidfds, spawning, locks, inotify, /proc.
        .target(name: "VigilSystem", dependencies: ["CVigil", "VigilCore"], swiftSettings: functionSections),
        // Durable state: atomic state files, the journal, the SQLite database (missions, outbox).
        .target(name: "VigilStore", dependencies: ["VigilSystem", "VigilCore", "CSQLite"], swiftSettings: functionSections),
        // Chat adapters and outbox delivery.
        .target(name: "VigilChat", dependencies: ["VigilStore", "VigilSystem", "VigilCore", "CVigil"], swiftSettings: functionSections),
        // The processes and commands: bridge, runner, shim, CLI.
        .target(name: "VigilApp", dependencies: ["VigilChat", "VigilStore", "VigilSystem", "VigilCore"], swiftSettings: functionSections),
        // The product: nothing of the benchmark or the test fixtures is linked into it. A release
        // build links the Swift runtime and FoundationEssentials into it (one file to install;
        // `ldd` shows only system libraries: docs/operator-guide.md, "Install"); debug builds and
        // the tests link them dynamically, as the toolchain does by default. libstdc++ and libgcc's
        // unwinder are linked in too: the linker scripts in contrib/static-libs, searched before
        // the compiler's own directory, name the archives for `-lstdc++` and `-lgcc_s`. The two private
        // libraries FoundationEssentials is built on are named because only their shared
        // versions say so themselves. The toolchain's lld links it (gold warns about a mktemp
        // inside FoundationEssentials, and the result is a little smaller). It lays out first the
        // functions an idle pair runs (contrib/link-order.txt, made by scripts/profile-link-order:
        // docs/architecture.md, "Memory").
        .executableTarget(name: "vigil", dependencies: ["VigilApp"], swiftSettings: functionSections,
                          linkerSettings: [.unsafeFlags(["-static-stdlib", "-l_FoundationCollections", "-l_FoundationCShims", "-use-ld=lld", "-L\(Context.packageDirectory)/contrib/static-libs",
                                                         "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/contrib/link-order.txt",
                                                         "-Xlinker", "--no-warn-symbol-ordering"],
                                                        .when(configuration: .release))]),

        // What tests, benchmarks and scripts share: temp directories, waiting, finding the
        // built binaries, the Synapse fixture (launched by scripts/chaoslib/synapse.py).
        .target(name: "VigilTestSupport", dependencies: ["VigilChat", "VigilStore", "VigilSystem", "VigilCore"]),
        // The benchmarks and the test drivers (`vigil-bench heal|missions|…`, `drive`, `fill`).
        .executableTarget(name: "vigil-bench", dependencies: ["VigilTestSupport", "VigilApp", "VigilChat", "VigilStore", "VigilSystem", "VigilCore"]),

        .testTarget(name: "VigilCoreTests", dependencies: ["VigilCore"]),
        .testTarget(name: "VigilSystemTests", dependencies: ["VigilSystem", "VigilTestSupport"]),
        .testTarget(name: "VigilStoreTests", dependencies: ["VigilStore", "VigilTestSupport"]),
        .testTarget(name: "VigilIntegrationTests", dependencies: ["VigilApp", "VigilStore", "VigilSystem", "VigilCore", "VigilTestSupport", "vigil", "vigil-bench"]),
        .testTarget(name: "VigilChatTests", dependencies: ["VigilChat", "VigilStore", "VigilSystem", "VigilCore", "VigilTestSupport", "vigil"]),
        // Missions end to end: the real `vigil` binary, real processes, kill -9 at crash points.
        .testTarget(name: "VigilMissionTests", dependencies: ["VigilApp", "VigilStore", "VigilSystem", "VigilCore", "VigilTestSupport", "vigil", "vigil-bench"]),
        // `vigil doctor`: every anomaly made for real in a temp state dir, found, fixed when safe.
        .testTarget(name: "VigilDoctorTests", dependencies: ["VigilApp", "VigilStore", "VigilSystem", "VigilCore", "VigilTestSupport", "vigil", "vigil-bench"]),
        // Workspace slots' git layer: real git, real repositories, a real `git daemon` on 127.0.0.1.
        .testTarget(name: "VigilWorkspaceTests", dependencies: ["VigilApp", "VigilStore", "VigilSystem", "VigilCore", "VigilTestSupport", "vigil"]),
    ],
    swiftLanguageModes: [.v6]
)
