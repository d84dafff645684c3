enum StatusCommand {
    static let command = Command(name: "status", summary: "(not built yet)", help: "usage: vigil status", run: { _ in
        throw CommandError("vigil status is not built yet")
    })
}
