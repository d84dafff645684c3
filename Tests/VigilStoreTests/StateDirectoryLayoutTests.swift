import Foundation
import Testing
import VigilStore

/// `StateDirectory` names every path in the state directory: each once, each inside it.
@Suite struct StateDirectoryLayoutTests {
    @Test func everyPathIsNamedOnceAndInsideTheDirectory() {
        let d = StateDirectory("/srv/vigil-state")
        var paths = [d.config, d.journal, d.database, d.quarantine, d.missions, d.chatLog, d.wrapperLock, d.stopMarker,
                     d.healReset, d.healState, d.programDir, d.keptProgram, d.keptProgramRecord, d.missionsLock, d.missionsWake,
                     d.missionDirectory(7), d.quarantineEntry("x.1.2.3"), d.databaseBeforeRestore(stamp: "s"), d.chatDirectory,
                     d.chatKick, d.chatSpool, d.chatSpoolLock, d.consoleEchoPosition, d.chatConsoleLock, d.chatStatus,
                     d.fault, d.runnerFault, d.chatFaultFired]
        for role in StateDirectory.Role.allCases {
            paths += [d.lock(role), d.pidFile(role), d.restartMarker(role), d.log(role), d.beatFile(role)]
        }
        #expect(Set(paths).count == paths.count, "one name for each path")
        for p in paths { #expect(p.hasPrefix(d.path + "/"), "\(p)") }
        let m = MissionPaths(stateDir: d, id: 7)
        #expect(m.directory == d.missionDirectory(7) && m.directory.hasPrefix(d.missions + "/"))
        #expect(m.allDistinctInside([m.output, m.previousOutput, m.result, m.scratch, m.owner, m.checkpoints]))
    }
}

extension MissionPaths {
    /// All inside the mission's directory, and distinct.
    func allDistinctInside(_ files: [String]) -> Bool {
        Set(files).count == files.count && files.allSatisfy { $0.hasPrefix(directory + "/") }
    }
}
