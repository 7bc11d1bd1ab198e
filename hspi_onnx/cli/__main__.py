from hspi_onnx.cli import main

main()
