//! The four released DDColor models: their names, encoders, files and where the hub keeps them.
use std::fmt;

/// The checkpoint file in each model's hub repository.
pub const WEIGHTS_FILE: &str = "pytorch_model.bin";
/// The configuration beside it (optional for loading: it only names the head count).
pub const CONFIG_FILE: &str = "config.json";
/// The hub revision that is downloaded.
pub const REVISION: &str = "main";
/// The hub account that publishes the models.
pub const HUB_OWNER: &str = "piddnad";
/// The hub repository with the authors' original `.pth` files.
pub const PTH_REPO: &str = "piddnad/DDColor-models";

/// The four models the DDColor authors released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ModelName {
    /// ConvNeXt-T, ImageNet; the paper's training scheme. Smallest and fastest.
    #[value(name = "paper_tiny", alias = "paper-tiny", alias = "tiny")]
    PaperTiny,
    /// ConvNeXt-L, ImageNet: the model of the paper's tables.
    #[value(name = "paper")]
    Paper,
    /// ConvNeXt-L, ImageNet with data cleaning: upstream's default, best on real-world photos.
    #[value(name = "modelscope")]
    Modelscope,
    /// ConvNeXt-L, ImageNet plus artistic images, no colourfulness loss.
    #[value(name = "artistic")]
    Artistic,
}

impl ModelName {
    /// Every released model, in the order `ddcolor weights list` shows them.
    pub const ALL: [ModelName; 4] = [
        ModelName::PaperTiny,
        ModelName::Paper,
        ModelName::Modelscope,
        ModelName::Artistic,
    ];
    /// The model used when neither `--weights` nor `--model` is given (GUIDE.md: "Which model").
    pub const DEFAULT: ModelName = ModelName::Modelscope;

    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::PaperTiny => "paper_tiny",
            ModelName::Paper => "paper",
            ModelName::Modelscope => "modelscope",
            ModelName::Artistic => "artistic",
        }
    }

    /// `piddnad/ddcolor_<name>`.
    pub fn repo(self) -> String {
        format!("{HUB_OWNER}/ddcolor_{}", self.as_str())
    }

    /// The authors' file name in [`PTH_REPO`] (and the name `./weights/` is searched for).
    pub fn pth_file(self) -> String {
        format!("ddcolor_{}.pth", self.as_str())
    }

    pub fn encoder(self) -> &'static str {
        match self {
            ModelName::PaperTiny => "ConvNeXt-T",
            _ => "ConvNeXt-L",
        }
    }

    /// Approximate size of `pytorch_model.bin`, for messages (the exact size and digest come
    /// from the server at download time).
    pub fn approx_size(self) -> &'static str {
        match self {
            ModelName::PaperTiny => "220 MB",
            _ => "912 MB",
        }
    }

    /// One line on what the model is for.
    pub fn about(self) -> &'static str {
        match self {
            ModelName::PaperTiny => {
                "smallest and fastest (4x fewer parameters); the paper's training"
            }
            ModelName::Paper => "the paper's model (reproduces its figures)",
            ModelName::Modelscope => "upstream's default: cleaned data, best on real-world photos",
            ModelName::Artistic => "extra artistic training images, fewer colour artefacts",
        }
    }
}

impl Default for ModelName {
    fn default() -> Self {
        ModelName::DEFAULT
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown model {s:?}: paper_tiny, paper, modelscope or artistic"))
    }
}
