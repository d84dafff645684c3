enum HealCommand {
    static let command = Command(name: "heal", summary: "(not built yet)", help: "usage: vigil heal", run: { _ in
        throw CommandError("vigil heal is not built yet")
    })
}
