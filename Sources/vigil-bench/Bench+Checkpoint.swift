import Foundation
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil-bench checkpoint`: save and restore of a 64 KB checkpoint (docs/missions.md,
/// "Checkpoints"), in process (the store: write, fsync, rename, meta) and from outside (the
/// `vigil checkpoint save` command a mission runs, process start included).
enum CheckpointBench {
    static func run(_ argv: [String], json: Bool = false) throws {
        let args = try Arguments(argv, valued: ["rounds"])
        let rounds = try args.int("rounds", min: 5) ?? 200
        let root = try TempDirectory.make(prefix: "vigil-bench-ckpt")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = StateDirectory(root + "/state")
        try AtomicFile.makeDirectory(MissionPaths(stateDir: dir, id: 1).directory)
        let src = root + "/src"
        var rng = SystemRandomNumberGenerator()
        try Data((0..<65536).map { _ in UInt8.random(in: 0...255, using: &rng) }).write(to: URL(fileURLWithPath: src))
        let store = CheckpointStore(stateDir: dir, mission: 1)
        let files = StateFiles(dir: dir, journal: Journal(path: dir.journal, source: "bench"))
        var save: [Double] = [], restore: [Double] = [], cli: [Double] = []
        for _ in 0..<rounds {
            let t0 = Clock.boot()
            _ = try store.save(from: src, attempt: 1)
            let t1 = Clock.boot()
            guard store.newestValid(files: files) != nil else { throw CommandError("the checkpoint just saved does not verify") }
            let t2 = Clock.boot()
            save.append((t1 - t0).milliseconds)
            restore.append((t2 - t1).milliseconds)
        }
        for _ in 0..<min(rounds, 50) {
            var options = Spawner.Options()
            options.newSession = false
            options.outputPath = "/dev/null"
            options.environment = ["VIGIL_MISSION_ID": "1", "VIGIL_MISSION_ATTEMPT": "1", "VIGIL_STATE_DIR": dir.path]
            let t0 = Clock.boot()
            let child = try Spawner.spawn([Binaries.vigil, "checkpoint", "save", src], options)
            guard let status = Spawner.wait(child.pid), exitCode(fromWaitStatus: status) == 0 else { throw CommandError("vigil checkpoint save failed") }
            cli.append((Clock.boot() - t0).milliseconds)
        }
        func p(_ a: [Double], _ q: Double) -> Double { ChatBench.percentile(a.sorted(), q) }
        var table = BenchTable(title: "vigil-bench checkpoint (\(rounds) rounds, 64 KB, fsynced)")
        table.add("save 64 KB (store: data + meta, fsynced), p50 / p95", String(format: "%.2f / %.2f ms", p(save, 0.5), p(save, 0.95)), "p50 ≤ 2 ms", "seed: < 100 ms",
                  value: p(save, 0.5), atMost: 2)
        table.add("restore 64 KB (find newest, verify size + CRC-32), p50 / p95", String(format: "%.3f / %.3f ms", p(restore, 0.5), p(restore, 0.95)),
                  "p50 ≤ 5 ms", "seed: < 500 ms", value: p(restore, 0.5), atMost: 5)
        table.add("`vigil checkpoint save` from outside (process start included), p50 / p95",
                  String(format: "%.1f / %.1f ms", p(cli, 0.5), p(cli, 0.95)), "(outside view)")
        table.print(json: json)
    }
}
