//! Chat templates: the Jinja template a GGUF carries in `tokenizer.chat_template`
//! (rendered with minijinja and Python-compatible string methods), or, when a file has
//! none, the well-known format its vocabulary was trained for.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::capabilities::ChatMessage;
use crate::error::{LanternError, LanternResult};

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const LLAMA3: &str = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n\
{{ m.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
const PHI3: &str = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}\
{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
const LLAMA2: &str = "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}[INST] {{ m.content | trim }} [/INST]\
{% elif m.role == 'system' %}<<SYS>>\n{{ m.content | trim }}\n<</SYS>>\n\n{% else %} {{ m.content | trim }} {{ eos_token }}{% endif %}{% endfor %}";

/// Which template a model uses, and where it came from.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    /// `gguf` for the file's own template, else the name of the fallback format.
    pub origin: &'static str,
    bos_token: String,
    eos_token: String,
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_function("strftime_now", |_format: String| -> String { "26 Jul 2024".to_string() });
    env
}

impl ChatTemplate {
    /// The file's template when it has one (checked to compile), else the fallback
    /// the vocabulary's special tokens point to.
    pub fn choose(embedded: Option<String>, tokenizer: &Tokenizer, bos_token: String, eos_token: String) -> LanternResult<Self> {
        if let Some(source) = embedded {
            environment()
                .template_from_str(&source)
                .map_err(|e| LanternError::InferenceFailed(format!("the GGUF chat template does not compile: {e}")))?;
            return Ok(ChatTemplate { source, origin: "gguf", bos_token, eos_token });
        }
        let has = |token: &str| tokenizer.token_to_id(token).is_some();
        let (source, origin) = if has("<|im_start|>") {
            (CHATML, "chatml")
        } else if has("<|start_header_id|>") {
            (LLAMA3, "llama3")
        } else if has("<|user|>") && has("<|end|>") {
            (PHI3, "phi3")
        } else {
            (LLAMA2, "llama2")
        };
        Ok(ChatTemplate { source: source.to_string(), origin, bos_token, eos_token })
    }

    /// The prompt text for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[ChatMessage]) -> LanternResult<String> {
        let messages: Vec<TemplateMessage> =
            messages.iter().map(|m| TemplateMessage { role: m.role.as_str(), content: &m.content }).collect();
        let context = minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        environment()
            .render_str(&self.source, context)
            .map_err(|e| LanternError::InvalidInput(format!("the chat template refused these messages: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::ChatRole;

    fn messages() -> Vec<ChatMessage> {
        vec![
            ChatMessage { role: ChatRole::System, content: "Be brief.".into() },
            ChatMessage { role: ChatRole::User, content: "Hi".into() },
        ]
    }

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate { source: source.into(), origin: "test", bos_token: "<s>".into(), eos_token: "</s>".into() }
    }

    #[test]
    fn fallback_formats_render_as_their_models_expect() {
        assert_eq!(
            template(CHATML).render(&messages()).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(template(PHI3).render(&messages()).unwrap(), "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n");
        assert_eq!(
            template(LLAMA3).render(&messages()).unwrap(),
            "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% for m in messages %}{% if m.role not in ['system', 'user'] %}{{ raise_exception('bad role') }}{% endif %}\
            {{ m.content.strip().upper() }}|{% endfor %}";
        assert_eq!(template(source).render(&messages()).unwrap(), "BE BRIEF.|HI|");
        let assistant = vec![ChatMessage { role: ChatRole::Assistant, content: "x".into() }];
        let error = template(source).render(&assistant).unwrap_err();
        assert!(matches!(error, LanternError::InvalidInput(ref m) if m.contains("bad role")), "{error:?}");
    }
}
