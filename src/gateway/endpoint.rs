//! The endpoints the gateway forwards, and the caller protocol each belongs to.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
}

/// A protocol an upstream may speak natively (`protocols = ["chat", "messages", "responses"]`); any other
/// reaches it translated to chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI's chat completions (and completions, embeddings).
    Chat,
    /// Anthropic Messages.
    Messages,
    /// OpenAI Responses.
    Responses,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chat" => Some(Protocol::Chat),
            "messages" => Some(Protocol::Messages),
            "responses" => Some(Protocol::Responses),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Chat => "chat",
            Protocol::Messages => "messages",
            Protocol::Responses => "responses",
        }
    }
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::Responses,
    ];

    /// Path below an upstream's base URL (Anthropic-style base URLs, such as DeepSeek's
    /// `https://api.deepseek.com/anthropic`, take `/v1/messages`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "v1/messages",
            Endpoint::Responses => "responses",
        }
    }

    /// Name in logs and usage history.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Responses => "responses",
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages => Protocol::Messages,
            Endpoint::Responses => Protocol::Responses,
            _ => Protocol::Chat,
        }
    }

    fn slot(self) -> usize {
        match self {
            Endpoint::Chat => 0,
            Endpoint::Completions => 1,
            Endpoint::Embeddings => 2,
            Endpoint::Messages => 3,
            Endpoint::Responses => 4,
        }
    }

    /// Position in a per-endpoint table.
    pub fn index(self) -> usize {
        self.slot()
    }
}
