enum RestartCommand {
    static let command = Command(name: "restart", summary: "(not built yet)", help: "usage: vigil restart", run: { _ in
        throw CommandError("vigil restart is not built yet")
    })
}
