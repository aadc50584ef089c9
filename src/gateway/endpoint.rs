//! The endpoints the gateway forwards, and the caller protocol each belongs to.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
}

/// A protocol an upstream may speak natively (`protocols = ["chat", "messages"]`); any other
/// reaches it translated to chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI's chat completions (and completions, embeddings).
    Chat,
    /// Anthropic Messages.
    Messages,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chat" => Some(Protocol::Chat),
            "messages" => Some(Protocol::Messages),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Chat => "chat",
            Protocol::Messages => "messages",
        }
    }
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
    ];

    /// Path below an upstream's base URL (Anthropic-style base URLs, such as DeepSeek's
    /// `https://api.deepseek.com/anthropic`, take `/v1/messages`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "v1/messages",
        }
    }

    /// Name in logs and usage history.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages => Protocol::Messages,
            _ => Protocol::Chat,
        }
    }

    fn slot(self) -> usize {
        match self {
            Endpoint::Chat => 0,
            Endpoint::Completions => 1,
            Endpoint::Embeddings => 2,
            Endpoint::Messages => 3,
        }
    }

    /// Position in a per-endpoint table.
    pub fn index(self) -> usize {
        self.slot()
    }
}
