"""Character bias: steer the assistant's replies by starting each one for it.

Text put at the start of the assistant's turn (through bot_prefix_modifier) is
continued by the model, so a short bias such as "*I am so happy*" colours the whole
reply.  The bias is part of the prompt, not of the reply you see.

settings.yaml:  character_bias-activate: true   character_bias-bias_string: "..."
"""

import gradio as gr

params = {
    "display_name": "Character bias",
    "is_tab": False,
    "activate": True,
    "bias_string": " *I am so happy*",
}


def bot_prefix_modifier(string, state):
    if params["activate"] and params["bias_string"]:
        return f"{string}{params['bias_string']}"
    return string


def ui():
    with gr.Accordion("Character bias", open=False):
        activate = gr.Checkbox(value=params["activate"], label="Start every reply with the bias text")
        bias = gr.Textbox(value=params["bias_string"], label="Bias text", placeholder="*I am so happy*")
    activate.change(lambda on: params.update(activate=bool(on)), activate, None, api_name="character_bias_activate")
    bias.change(lambda text: params.update(bias_string=str(text)), bias, None, api_name="character_bias_text")
