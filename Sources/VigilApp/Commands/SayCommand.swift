enum SayCommand {
    static let command = Command(name: "say", summary: "(not built yet)", help: "usage: vigil say", run: { _ in
        throw CommandError("vigil say is not built yet")
    })
}
