// Placeholder so the package builds on the `coretests` branch before the integration tests land.
// Delete this file when Tests/VigilIntegrationTests has real tests.
