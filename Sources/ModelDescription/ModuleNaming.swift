import CNN

/// How a model's tensors get torchvision's names from the structure the zoo builds it with, the way
/// `nn.Module` names them: a module's tensors are prefixed with the attribute it is stored under
/// (`conv1`, `fc`, `features`), an `nn.Sequential` numbers its children from 0 (`features.3`,
/// `layer2.0`, `branch2.1`), and nesting joins the two with dots (`layer2.0.downsample.1`,
/// `inception3a.branch2.1.conv`). One rule per kind of module, no table per model: a builder says
/// "these layers form module `features`, an `nn.Sequential`", and every layer's name follows.
///
/// Names change nothing but names: the layers, their order, their paths in errors and their random
/// keys stay those of the flat list.
enum ModuleNaming {
    /// `layers`, as one module stored under `name`: a layer already named `x` inside it becomes
    /// `name.x`, an unnamed one `name` (a module's own parameterless layers, such as the ReLU that
    /// `BasicConv2d` applies as a function).
    static func module(_ name: String, _ layers: [LayerSpec]) -> [LayerSpec] {
        layers.map { layer in
            switch layer {
            case .named(let inner, let spec): return .named(join(name, inner), spec)
            default: return .named(name, layer)
            }
        }
    }

    /// An `nn.Sequential` stored under `name` ("" for one that is itself a child being numbered):
    /// child i is module `name.i`. Each child is a list of layers, as a child module (a
    /// `BasicConv2d`) may run several.
    static func sequential(_ name: String, _ children: [[LayerSpec]]) -> [LayerSpec] {
        children.enumerated().flatMap { index, layers in module(join(name, "\(index)"), layers) }
    }

    /// An `nn.Sequential` of single layers.
    static func sequential(_ name: String, layers: [LayerSpec]) -> [LayerSpec] {
        sequential(name, layers.map { [$0] })
    }

    private static func join(_ outer: String, _ inner: String) -> String {
        outer.isEmpty ? inner : "\(outer).\(inner)"
    }
}
