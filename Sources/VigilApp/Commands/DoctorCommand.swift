enum DoctorCommand {
    static let command = Command(name: "doctor", summary: "(not built yet)", help: "usage: vigil doctor", run: { _ in
        throw CommandError("vigil doctor is not built yet")
    })
}
