from setuptools import find_packages, setup

setup(
    name="segnet-caffe",
    version="0.1.0",
    description="Caffe's SegNet toolkit (prototxt, caffemodel, solvers, pycaffe API) on PyTorch",
    packages=find_packages(include=["segnet_caffe", "segnet_caffe.*"]),
    package_data={"segnet_caffe.proto": ["caffe.proto"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "numpy",
        "protobuf>=7.35.1,<8",
        "opencv-python-headless",
        "pillow",
        "matplotlib",
        "tqdm",
        "grandalf",
        "pydot",  # caffe.draw.get_pydot_graph (pure Python; rendering its graph needs Graphviz)
        "lmdb",
    ],
    extras_require={
        # six, scipy, scikit-learn and scikit-image: what the client code that tests/test_clients.py
        # runs imports (BVLC pycaffe's unit tests and the SegNet tutorial's scripts).
        "test": ["pytest", "hypothesis", "grpcio-tools", "h5py",
                 "six", "scipy", "scikit-learn", "scikit-image", "onnx", "onnxruntime"],
        "hdf5": ["h5py"],
        "onnx": ["onnx", "onnxruntime"],  # segnet-caffe export, and its check in onnxruntime
    },
    entry_points={"console_scripts": ["segnet-caffe=segnet_caffe.cli:main"]},
)
