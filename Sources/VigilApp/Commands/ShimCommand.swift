enum ShimCommand {
    static let command = Command(name: "shim", summary: "(not built yet)", help: "usage: vigil shim", run: { _ in
        throw CommandError("vigil shim is not built yet")
    })
}
