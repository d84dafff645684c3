enum StopCommand {
    static let command = Command(name: "stop", summary: "(not built yet)", help: "usage: vigil stop", run: { _ in
        throw CommandError("vigil stop is not built yet")
    })
}
