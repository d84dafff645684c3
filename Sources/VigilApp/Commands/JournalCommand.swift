enum JournalCommand {
    static let command = Command(name: "journal", summary: "(not built yet)", help: "usage: vigil journal", run: { _ in
        throw CommandError("vigil journal is not built yet")
    })
}
