import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

extension MissionTests {
    /// kill -9 of the runner at random moments while missions are added, started and finished,
    /// for a bounded time: no acknowledged mission lost, none started twice, every finished one
    /// has its output and exit status, keyed missions never overlap and keep their order, and
    /// the database passes `PRAGMA integrity_check` (checked in `finish`).
    @Test func killNineChaos() throws {
        let env = try MissionEnv("chaos")
        defer { env.finish() }
        let runs = env.path("runs")
        let keyed = env.path("keyed")
        let script = """
            echo "start $VIGIL_MISSION_ID" >> "$1"; [ -n "$2" ] && echo "start $VIGIL_MISSION_ID" >> "$2"
            echo "out $VIGIL_MISSION_ID"; sleep 0.0$((VIGIL_MISSION_ID % 5))
            [ -n "$2" ] && echo "end $VIGIL_MISSION_ID" >> "$2"; echo "end $VIGIL_MISSION_ID" >> "$1"; exit 0
            """
        var acked: [Int64] = []
        var keyedIDs: [Int64] = []
        var driver = try env.startDriver(maxParallel: 2)
        var kills = 0
        let deadline = Clock.boot() + .seconds(20)
        while Clock.boot() < deadline {
            for _ in 0..<Int.random(in: 1...3) {
                let withKey = acked.count % 3 == 0
                let id = try env.add(["sh", "-c", script, "mission", runs, withKey ? keyed : ""], lock: withKey ? "k" : nil)
                acked.append(id)
                if withKey { keyedIDs.append(id) }
            }
            usleep(UInt32.random(in: 0...150_000))
            env.kill9(driver)
            kills += 1
            driver = try env.startDriver(maxParallel: 2)
        }
        try waitUntil("every acknowledged mission to end", timeout: 90) {
            try acked.allSatisfy { try env.mission($0).state.isFinal }
        }
        let all = try env.queue.missions()
        #expect(all.map(\.id) == acked, "lost or unexpected missions")
        for id in acked {
            let m = try env.mission(id)
            #expect(m.state == .done && m.exitCode == 0 && m.attempts == 1, "mission \(id): \(m.state) \(m.reason ?? "")")
            #expect(readText(MissionPaths(stateDir: env.state, id: id).output) == "out \(id)\n", "output of \(id)")
        }
        let log = lines(runs)
        for id in acked {
            #expect(log.filter { $0 == "start \(id)" }.count == 1, "mission \(id) started \(log.filter { $0 == "start \(id)" }.count) times")
            #expect(log.filter { $0 == "end \(id)" }.count == 1)
        }
        #expect(lines(keyed) == keyedIDs.flatMap { ["start \($0)", "end \($0)"] }, "keyed missions overlapped or ran out of order")
        print("chaos: \(acked.count) missions, \(kills) runner kills, \(env.events("missions-recovered").count) recoveries")
    }
}
