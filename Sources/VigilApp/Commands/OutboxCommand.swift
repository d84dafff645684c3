enum OutboxCommand {
    static let command = Command(name: "outbox", summary: "(not built yet)", help: "usage: vigil outbox", run: { _ in
        throw CommandError("vigil outbox is not built yet")
    })
}
