import Wire

extension PeerMeshSecurity {
    /// A worker's peer mesh security from its loaded key pair (`WorkerSecurity.keyPair`).
    public init(keyPair: CurveKeyPair) throws {
        try self.init(publicKey: keyPair.publicKey, secretKey: keyPair.secretKey)
    }
}
