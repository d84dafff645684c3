// Placeholder so the package builds on the `coretests` branch before the chat module lands.
// Delete this file when Sources/VigilChat has real sources.
enum VigilChatPlaceholder {}
