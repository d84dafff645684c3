import FoundationEssentials
import VigilStore
import VigilSystem

/// `vigil checkpoint save FILE`: from inside a mission, stores FILE as its newest checkpoint
/// (docs/missions.md, "Checkpoints"); the next attempt gets it as `VIGIL_CHECKPOINT`.
enum CheckpointCommand {
    static let command = Command(name: "checkpoint", summary: "save a checkpoint of the running mission (from inside it)", help: """
    usage: vigil checkpoint save FILE

    Run from inside a mission (it finds the mission in VIGIL_MISSION_ID, VIGIL_MISSION_ATTEMPT
    and VIGIL_STATE_DIR): stores a copy of FILE, with its size and CRC-32, durably (fsynced)
    and prints the checkpoint's number once it is. The newest \(CheckpointStore.keep) are kept;
    FILE is at most \(CheckpointStore.maxSize >> 20) MiB. The next attempt of the mission (after a crash or
    a retry) gets the newest one that verifies as VIGIL_CHECKPOINT, the path of a file it may
    read; a corrupt one is moved to quarantine/ (journaled) and the one before it is used.
    """, run: run)

    static func run(_ inv: Invocation) throws {
        guard inv.arguments.first == "save" else {
            throw UsageError("vigil checkpoint needs a subcommand: save FILE")
        }
        let args = try Arguments(Array(inv.arguments.dropFirst()), valued: [])
        guard args.positional.count == 1, args.rest == nil else { throw UsageError("usage: vigil checkpoint save FILE") }
        let env = ProcessInfo.processInfo.environment
        guard let idText = env["VIGIL_MISSION_ID"], let id = Int64(idText), id > 0 else {
            throw UsageError("vigil checkpoint save runs inside a mission (VIGIL_MISSION_ID is not set)")
        }
        let attempt = env["VIGIL_MISSION_ATTEMPT"].flatMap { Int($0) } ?? 0
        let store = CheckpointStore(stateDir: inv.stateDir, mission: id)
        do {
            let meta = try store.save(from: args.positional[0], attempt: attempt)
            if !printOut("\(meta.seq)") {
                printErr("vigil: checkpoint \(meta.seq) of mission \(id) was saved, but its number could not be printed (standard output is closed or failing)\n")
            }
        } catch let e as CheckpointStore.SaveError {
            throw CommandError(e.description)
        } catch {
            throw CommandError("checkpoint not saved: \(error)")
        }
    }
}
