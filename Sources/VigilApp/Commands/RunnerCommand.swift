enum RunnerCommand {
    static let command = Command(name: "runner", summary: "(not built yet)", help: "usage: vigil runner", run: { _ in
        throw CommandError("vigil runner is not built yet")
    })
}
