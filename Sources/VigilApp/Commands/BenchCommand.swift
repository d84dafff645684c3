enum BenchCommand {
    static let command = Command(name: "bench", summary: "(not built yet)", help: "usage: vigil bench", run: { _ in
        throw CommandError("vigil bench is not built yet")
    })
}
