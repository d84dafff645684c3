import Foundation
import VigilStore

enum MissionBench {
    static func run(_ args: [String], stateDir: StateDirectory) throws {}
    static func fill(stateDir: StateDirectory, count: Int) throws {}
}
