enum MissionCommand {
    static let command = Command(name: "mission", summary: "(not built yet)", help: "usage: vigil mission", run: { _ in
        throw CommandError("vigil mission is not built yet")
    })
}
