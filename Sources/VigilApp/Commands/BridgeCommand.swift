enum BridgeCommand {
    static let command = Command(name: "bridge", summary: "(not built yet)", help: "usage: vigil bridge", run: { _ in
        throw CommandError("vigil bridge is not built yet")
    })
}
